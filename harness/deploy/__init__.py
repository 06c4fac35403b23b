"""Putting firmware on a board: the firmware folder, the device config file, MicroPython packages."""

from . import packages
from .device_config import CONFIG_FILE, build_config
from .device_start import DeviceSetup, device_setup, device_tls, firmware_of, new_client_id, start_device
from .firmware import Device, Firmware

__all__ = ["CONFIG_FILE", "Device", "DeviceSetup", "Firmware", "build_config", "device_setup", "device_tls",
           "firmware_of", "new_client_id", "packages", "start_device"]
