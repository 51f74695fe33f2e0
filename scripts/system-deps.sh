#!/usr/bin/env bash
# Install the system packages otalab's lab uses when they are missing: Mosquitto (the default
# broker; the embedded amqtt broker is the fallback) and, with --browser (the tests), Chromium.
# Runs apt-get only as root on Debian/Ubuntu; elsewhere it says what to install.
set -u
browser=0
[ "${1:-}" = "--browser" ] && browser=1
need=()
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  need+=(mosquitto mosquitto-clients)
fi
if [ "$browser" = 1 ] && [ "${OTALAB_BROWSER_TEST:-1}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  need+=(chromium chromium-driver)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { echo "system-deps: apt-get install ${need[*]} failed" >&2; exit 1; }
  # Debian starts a system Mosquitto on port 1883; the lab starts its own brokers on free ports.
else
  echo "otalab: please install: ${need[*]} (conda-forge: mosquitto; apt: ${need[*]}; brew: mosquitto chromium)" >&2
  echo "otalab: without Mosquitto the embedded broker is used; without Chromium the browser test is skipped" >&2
fi
exit 0
