#!/usr/bin/env bash
# Install what the test suite starts by itself: Orthanc with its DICOMweb plugin; Debian's
# Chromium with its driver (chromium, chromium-driver), through which the tests open the HTML
# report in a headless browser (tests/report/test_browser.py); and SLURM with munge
# (slurm-wlm, munge), from which tests/support/slurm.py starts a throw-away single-node
# cluster on 127.0.0.1 (tests/pipeline/test_slurm.py).
#
# Non-interactive, idempotent, and safe in a container without an init system:
#
# * The orthanc package's postinst starts the packaged service ("invoke-rc.d orthanc start",
#   then the dh_installinit/dh_installsystemd snippets), and the orthanc-dicomweb package
#   restarts it through a dpkg trigger. In a container without systemd, invoke-rc.d would run
#   /etc/init.d/orthanc, which daemonises Orthanc on port 8042 with /etc/orthanc/ as its
#   configuration. The tests never use that service (they start their own Orthanc on a free
#   port of 127.0.0.1), so while installing this script puts a policy-rc.d in place that
#   denies every service action, unless one already exists (Docker images ship one).
# * Afterwards it stops any Orthanc service that was started nonetheless (systemd unit or
#   init script), so no server is left listening.
# * The munge, slurmctld and slurmd packages start their services from their postinst the
#   same way (invoke-rc.d / deb-systemd-invoke); the policy-rc.d denies that too, and
#   afterwards any munged, slurmctld or slurmd that runs from the packaged set-up
#   (/etc/munge, /etc/slurm, pid files under /run) is stopped. The tests never use them:
#   their cluster has its own key, configuration, sockets and ports in a temporary folder.
# * Chromium starts no service; the tests drive /usr/bin/chromium through /usr/bin/chromedriver
#   themselves (Selenium is told both paths, so it never downloads a browser or driver).
#
# Usage: .ci/install-services.sh   (as root, or with sudo available)
set -euo pipefail

PACKAGES=(orthanc orthanc-dicomweb chromium chromium-driver slurm-wlm munge)
POLICY=/usr/sbin/policy-rc.d

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-services: expected root or sudo, found neither." \
            "Fix: run this script as root." >&2
        exit 1
    fi
    SUDO=(sudo)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    added_policy=0
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\n# Added by medtl .ci/install-services.sh: start no service.\nexit 101\n' \
            | "${SUDO[@]}" tee "$POLICY" >/dev/null
        "${SUDO[@]}" chmod 0755 "$POLICY"
        added_policy=1
    fi
    cleanup() {
        if [ "$added_policy" = 1 ]; then
            "${SUDO[@]}" rm -f "$POLICY"
        fi
    }
    trap cleanup EXIT

    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "${missing[@]}"
fi

# Stop whatever the packages may have started: the tests run their own server.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    "${SUDO[@]}" systemctl stop orthanc.service >/dev/null 2>&1 || true
    "${SUDO[@]}" systemctl disable orthanc.service >/dev/null 2>&1 || true
fi
if [ -f /run/orthanc.pid ]; then
    "${SUDO[@]}" start-stop-daemon --stop --quiet --oknodo --retry=TERM/15/KILL/5 \
        --pidfile /run/orthanc.pid --exec /usr/sbin/Orthanc || true
    "${SUDO[@]}" rm -f /run/orthanc.pid
fi

# The packaged munge and SLURM services: stopped and disabled too (the tests start their own).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    for unit in slurmd.service slurmctld.service munge.service; do
        "${SUDO[@]}" systemctl stop "$unit" >/dev/null 2>&1 || true
        "${SUDO[@]}" systemctl disable "$unit" >/dev/null 2>&1 || true
    done
fi
for daemon in slurmd:/run/slurmd.pid slurmctld:/run/slurmctld.pid munged:/run/munge/munged.pid; do
    name=${daemon%%:*}
    pidfile=${daemon#*:}
    if [ -f "$pidfile" ]; then
        "${SUDO[@]}" start-stop-daemon --stop --quiet --oknodo --retry=TERM/15/KILL/5 \
            --pidfile "$pidfile" --exec "/usr/sbin/$name" || true
        "${SUDO[@]}" rm -f "$pidfile"
    fi
done

# Check that what the tests need is there.
if [ ! -x /usr/sbin/Orthanc ]; then
    echo "install-services: expected /usr/sbin/Orthanc after installing, found none." >&2
    exit 1
fi
plugin=$(dpkg -L orthanc-dicomweb | grep -E '/libOrthancDicomWeb\.so' | head -n 1 || true)
if [ -z "$plugin" ]; then
    echo "install-services: expected libOrthancDicomWeb.so from orthanc-dicomweb, found none." >&2
    exit 1
fi
echo "install-services: $(/usr/sbin/Orthanc --version 2>/dev/null | head -n 1), plugin $plugin"
for binary in /usr/bin/chromium /usr/bin/chromedriver; do
    if [ ! -x "$binary" ]; then
        echo "install-services: expected $binary after installing chromium and" \
            "chromium-driver, found none." >&2
        exit 1
    fi
done
for binary in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch \
    /usr/bin/srun /usr/bin/squeue /usr/bin/sinfo /usr/bin/scontrol /usr/bin/scancel; do
    if [ ! -x "$binary" ]; then
        echo "install-services: expected $binary after installing slurm-wlm and munge," \
            "found none." >&2
        exit 1
    fi
done
echo "install-services: $(/usr/sbin/slurmctld -V 2>/dev/null | head -n 1)," \
    "$(/usr/sbin/munged --version 2>/dev/null | head -n 1)"
# Debian's /usr/bin/chromium wrapper may print shell noise on stderr; keep only the version.
echo "install-services: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)," \
    "$(/usr/bin/chromedriver --version 2>/dev/null | head -n 1)"
