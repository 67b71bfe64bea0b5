#!/bin/sh
# Server side: takes the curated frames away from every camera device.
#
#   pull.sh HOSTS_FILE DEST
#
# HOSTS_FILE has one device a line, "HOST [PORT]" (# starts a comment). Each device's frames go
# to DEST/HOST/<camera>/frames/YYYY-MM-DD/. What arrives is removed from the device (rsync's
# --remove-source-files removes a file only after it was transferred whole and unchanged).
# The device writes each sidecar before its image, so an image is never seen without its
# sidecar; a sidecar may arrive one pull before its image, which is fine. A device with no
# <camera>/frames/ directory at all is reported as a failure (install.sh --camera creates it).
#
# Environment: PULL_KEY (ssh key, default /etc/framecull-pull/id_ed25519), PULL_KNOWN_HOSTS
# (default /var/lib/framecull-pull/known_hosts), PULL_USER (default framecull).
set -eu

hosts=${1:?usage: pull.sh HOSTS_FILE DEST}
dest=${2:?usage: pull.sh HOSTS_FILE DEST}
key=${PULL_KEY:-/etc/framecull-pull/id_ed25519}
known=${PULL_KNOWN_HOSTS:-/var/lib/framecull-pull/known_hosts}
user=${PULL_USER:-framecull}

failed=0
# Read the list on fd 3: ssh would otherwise swallow the rest of it from stdin.
while read -r host port rest <&3; do
    case $host in ''|'#'*) continue ;; esac
    mkdir -p "$dest/$host"
    ssh="ssh -i $key -p ${port:-22} -o BatchMode=yes -o IdentitiesOnly=yes"
    ssh="$ssh -o UserKnownHostsFile=$known -o StrictHostKeyChecking=accept-new -o ConnectTimeout=20"
    # -R keeps <camera>/frames/ in the destination; '*' is expanded on the device (by rrsync);
    # --ignore-missing-args: a device whose cameras have kept nothing yet is not an error.
    status=0
    # --no-links: a symbolic link on the device is neither copied into this tree nor followed.
    rsync -a --no-links --relative --remove-source-files --ignore-missing-args --timeout=120 -e "$ssh" \
        "$user@$host:*/frames/" "$dest/$host/" </dev/null || status=$?
    case $status in
        0) ;;
        24) ;;  # files vanished on the device (its disk cap deleted them): normal
        *) echo "pull.sh: $host: rsync failed with status $status" >&2; failed=1 ;;
    esac
    : "$rest"
done 3<"$hosts"
exit "$failed"
