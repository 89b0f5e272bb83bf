#!/usr/bin/env bash
# Debian/Ubuntu packages the GUI tests need: Xvfb (a real X server with OpenGL for napari) and the
# xcb libraries PyQt5's platform plugin loads. Installs only what is missing; needs root or sudo.
set -euo pipefail
pkgs=(xvfb xauth libgl1 libegl1 libdbus-1-3 libfontconfig1 libxkbcommon0 libxkbcommon-x11-0 libxcb-icccm4
      libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-render-util0 libxcb-randr0 libxcb-shape0
      libxcb-xfixes0 libxcb-cursor0 libxcb-xkb1 libxcb1)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "system-deps: not a Debian/Ubuntu system; install Xvfb and the xcb libraries for Qt yourself: ${missing[*]}" >&2
  exit 0
fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
