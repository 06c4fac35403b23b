"""Putting firmware on a board: the firmware folder, the device config file, MicroPython packages."""

from . import packages
from .device_config import CONFIG_FILE, build_config
from .firmware import Device, Firmware

__all__ = ["CONFIG_FILE", "Device", "Firmware", "build_config", "packages"]
