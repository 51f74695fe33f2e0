"""Sans-IO formats of the Sming OTA-over-MQTT protocol: versions, packages, OTA files.

:mod:`.kinds` (every format's magic, named once, and ``detect(data) -> Kind``),
:mod:`.version` (versions, topics, device profiles), :mod:`.package` (the patch-prefixed
package, its pre-publish check and the device's streaming parser), :mod:`.ota` (building
and decoding ``.ota`` files), :mod:`.secretstream` (the encryption container, written and
read), :mod:`._sodium` (the decoder's per-chunk libsodium calls).

No networking and no printing here: functions take and return bytes, parsers
take chunks and return events with their byte offsets, and ``end_of_input()`` ends
them (see ``../shared/style.md``, h11). The bottom layer: nothing here imports
from the rest of otalib but :mod:`otalib.errors`.
"""
