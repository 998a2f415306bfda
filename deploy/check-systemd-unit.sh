#!/usr/bin/env bash
# Fails when a unit's systemd-analyze exposure rises above 2.0.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
status=0
for unit in deploy/systemd/mmd.service deploy/systemd/mmd@.service; do
  # The template is checked as an instance, as systemd would load it.
  target="$unit"
  if [[ "$unit" == *@.service ]]; then
    target="$(mktemp -d)/mmd@ci.service"
    cp "$unit" "$target"
  fi
  exposure=$(systemd-analyze security --offline=yes "$target" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  if [[ -z "$exposure" ]]; then
    echo "systemd-analyze gave no exposure for $unit" >&2; status=1; continue
  fi
  echo "$unit: exposure $exposure"
  if ! awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }'; then
    echo "$unit: exposure $exposure is above 2.0" >&2; status=1
  fi
done
exit $status
