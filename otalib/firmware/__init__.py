"""Firmware images, all in one place.

:mod:`.image` (ESP images through esptool: detect, inspect, walk the parts, the otalab
app marker, ``elf2image``), :mod:`.demo` (synthesised valid demo images),
:mod:`.partitions` (Sming / ESP-IDF partition tables), :mod:`.build` (build a Sming
project and collect its ROMs), :mod:`.flashing` (flash and read real boards with esptool).
"""
