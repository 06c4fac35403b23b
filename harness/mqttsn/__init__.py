"""MQTT-SN (MQTT for Sensor Networks, over UDP): a gateway in the harness that bridges battery
nodes to the test's MQTT broker, the record of every datagram through it, the MQTT-SN 1.2 wire
format, and the harness's own small MQTT-SN client."""

from .client import SnClient
from .gateway import Gateway
from .packets import Packet, decode, encode
from .record import SnMessage, SnTraffic

__all__ = ["Gateway", "Packet", "SnClient", "SnMessage", "SnTraffic", "decode", "encode"]
