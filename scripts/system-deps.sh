#!/usr/bin/env bash
# Debian/Ubuntu packages the GUI tests need: Xvfb (a real X server with OpenGL for napari) and the
# libraries PyQt6's Qt 6 loads: xcb platform plugin (libxcb-*; libxcb-cursor0 since Qt 6.5), OpenGL/EGL
# (libgl1 libegl1), fonts (libfontconfig1), D-Bus and GLib (libdbus-1-3 libglib2.0-0), X11 (libx11-xcb1).
# Installs only what is missing; needs root or sudo.
set -euo pipefail
pkgs=(xvfb xauth libgl1 libegl1 libdbus-1-3 libfontconfig1 libfreetype6 libglib2.0-0 libx11-xcb1
      libxkbcommon0 libxkbcommon-x11-0 libxcb1 libxcb-cursor0 libxcb-glx0 libxcb-icccm4 libxcb-image0
      libxcb-keysyms1 libxcb-randr0 libxcb-render0 libxcb-render-util0 libxcb-shape0 libxcb-shm0
      libxcb-sync1 libxcb-util1 libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "system-deps: not a Debian/Ubuntu system; install Xvfb and the libraries PyQt6 needs yourself: ${missing[*]}" >&2
  exit 0
fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
