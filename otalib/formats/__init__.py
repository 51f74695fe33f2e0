"""Sans-IO formats of the Sming OTA-over-MQTT protocol: versions, packages, OTA files.

No networking and no printing here: functions take and return bytes, parsers
take chunks and return events (see ``../shared/style.md``, h11).
"""
