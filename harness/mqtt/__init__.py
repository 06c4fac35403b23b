"""MQTT for the harness: the broker a board talks to (embedded amqtt, mosquitto or an external
one, over TLS if asked), the harness's own MQTT client, the recorder of routed traffic with its checks, and the
checks of a device living through an outage."""

from ..errors import BrokerError, MqttError, TelemetryError
from .board_clock import BoardClock
from .broker import AmqttBroker, Broker, ExternalBroker, MosquittoBroker, make_broker
from .client import MqttClient
from .listener import Listener
from .outage import Outage
from .telemetry import Message, Telemetry, Where
from .tls import BrokerTls, ClientCert, GeneratedTls, ProvidedTls
from .topics import topic_matches

__all__ = ["Broker", "AmqttBroker", "MosquittoBroker", "ExternalBroker", "make_broker", "MqttClient",
           "Listener", "Telemetry", "Message", "Where", "topic_matches", "BoardClock", "Outage",
           "BrokerTls", "GeneratedTls", "ProvidedTls", "ClientCert",
           "BrokerError", "MqttError", "TelemetryError"]
