"""Docker engines, through the docker SDK (imported only when an engine is first used): the
engine DOCKER_HOST names, the labels that tie each container to the run that started it (so the
next run removes what a killed one left), and images built locally from this machine's packages.

    Engine                 a connected engine; where its published ports are reached; leftovers
    run_labels, owner_gone the ownership label of a container (ownership.py)
    mosquitto_image        Debian's mosquitto as an image, imported once (images.py)
"""

from .engine import DEFAULT_URL, Engine, engine_url
from .images import (MOSQUITTO_CONF, MOSQUITTO_CONF_PATH, MOSQUITTO_PORT, MOSQUITTO_REPOSITORY, host_libraries,
                     import_rootfs, mosquitto_available, mosquitto_image)
from .ownership import LABEL, ROLE_LABEL, owner_gone, run_id, run_labels

__all__ = ["DEFAULT_URL", "Engine", "engine_url", "MOSQUITTO_CONF", "MOSQUITTO_CONF_PATH", "MOSQUITTO_PORT",
           "MOSQUITTO_REPOSITORY", "host_libraries", "import_rootfs", "mosquitto_available", "mosquitto_image",
           "LABEL", "ROLE_LABEL", "owner_gone", "run_id", "run_labels"]
