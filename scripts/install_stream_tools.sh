#!/usr/bin/env bash
# Debian packages the streaming tests use to serve real streams on loopback: ffmpeg (writes test
# videos), GStreamer's RTSP server, driven from Debian's own python3 (which has `gi`), and the
# mosquitto MQTT broker (the MQTT sink's tests start their own on a free port; the package's
# system service is not needed), and chromium (the live view's page is tested in headless
# Chromium, driven over its DevTools protocol: tests/test_web_browser.py).
# Skips quietly what is already there; without root or apt-get it says what is missing and the
# tests that need it skip with that reason.
set -euo pipefail
packages=(ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 python3-gst-1.0
          gstreamer1.0-plugins-base gstreamer1.0-plugins-good mosquitto chromium)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [[ ${#missing[@]} == 0 ]]; then
  echo "stream tools present"
  exit 0
fi
sudo_cmd=()
[[ $(id -u) != 0 ]] && command -v sudo >/dev/null && sudo_cmd=(sudo)
if ! command -v apt-get >/dev/null || { [[ $(id -u) != 0 ]] && [[ ${#sudo_cmd[@]} == 0 ]]; }; then
  echo "cannot install ${missing[*]} (needs apt-get as root); the tests that need them will skip"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed ${missing[*]}"
