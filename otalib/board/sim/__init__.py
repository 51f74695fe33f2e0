"""The simulated device: a pure model of a Sming board, no sockets and no threads.

:mod:`.build` (:class:`~otalib.board.sim.build.DeviceBuild`: how the firmware was built — app id,
version, ENABLE_OTA_* flags and keys, profile, chip, flash layout; the device and ``otalab inspect``
both take one), :mod:`.flash` (the board's flash chip as a file: layout, sectors, slot writer),
:mod:`.device` (rBoot and the OTA application: boot, update, rollback over that flash),
:mod:`.sming_console` (the device's console lines, rendered as Sming prints them).
:mod:`otalib.board.virtual` runs this model behind MQTT and a serial-like console.
"""
