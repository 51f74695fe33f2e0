"""Sans-IO formats of the Sming OTA-over-MQTT protocol: versions, packages, OTA files.

:mod:`.version` (versions, topics, device profiles), :mod:`.package` (the patch-prefixed
package), :mod:`.ota` (building and decoding ``.ota`` files), :mod:`._sodium` (the
decoder's per-chunk libsodium calls).

No networking and no printing here: functions take and return bytes, parsers
take chunks and return events (see ``../shared/style.md``, h11).
"""
