"""The models a user can pick: built-in cards and checkpoints, weights and downloads."""
