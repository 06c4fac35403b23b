"""The simulated ESP32's MicroPython side (shims, parts, profiles), shipped as package data.

CPython never imports the modules in this folder: the unix port runs them with this folder on
its MICROPYPATH. This file only lets the installed package locate the folder
(`micropython_hil.simulated_boards`).
"""
