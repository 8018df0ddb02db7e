"""twistd plugin: ``twistd -n hurricane [--config FILE]``."""

from twisted.application.service import ServiceMaker

hurricane = ServiceMaker(
    "Hurricane",
    "hurricane.tap",
    "Hurricane mail server: submission, delivery, bounce analysis, reports",
    "hurricane",
)
