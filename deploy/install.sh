#!/usr/bin/env bash
# Installs framecull on one device (Debian bookworm / Raspberry Pi OS, as root). Idempotent:
# running it again changes only what differs, and never touches an existing camera config.
#
#   sudo deploy/install.sh                     # from a checkout of the repository
#   sudo deploy/install.sh --camera lot-north  # also create /etc/framecull/lot-north.toml if absent
#   deploy/install.sh --root /tmp/r            # into a throwaway root: no apt, useradd, chown, systemctl
#   deploy/install.sh --source framecull-0.1.0-py3-none-any.whl
# The venv is made with Debian's /usr/bin/python3 (PYTHON= to change), whose apt packages
# (picamera2, systemd) it sees.
set -euo pipefail

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
root=""
source_spec=$repo
camera=""
skip_venv=0

while [ $# -gt 0 ]; do
    case $1 in
        --root) root=$2; shift 2 ;;
        --source) source_spec=$2; shift 2 ;;
        --camera) camera=$2; shift 2 ;;
        --skip-venv) skip_venv=1; shift ;;  # for tests of the file layout only
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown argument: $1" >&2; usage 2 >&2 ;;
    esac
done
if [ -n "$camera" ] && ! printf '%s' "$camera" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._-]*$'; then
    echo "install.sh: camera names are letters, digits, . _ - : $camera" >&2
    exit 2
fi
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or with --root DIR for a test install)" >&2
    exit 1
fi
real=1
[ -n "$root" ] && real=0

opt=$root/opt/framecull
venv=$opt/venv
etc=$root/etc/framecull
state=$root/var/lib/framecull
unit_dir=$root/etc/systemd/system

# Copy a file only when its content differs, so a second run changes nothing.
put() {  # put SRC DEST MODE
    if cmp -s "$1" "$2"; then
        return 0
    fi
    install -D -m "$3" "$1" "$2"
    echo "installed $2"
}

on_raspberry_pi() {
    grep -qi 'raspberry pi' /proc/device-tree/model 2>/dev/null ||
        [ -e /etc/apt/sources.list.d/raspi.list ]
}

if [ "$real" = 1 ]; then
    packages="python3 python3-venv python3-systemd rsync openssh-server"
    # picamera2 comes from Raspberry Pi OS's apt (it is tied to the system libcamera), not PyPI.
    on_raspberry_pi && packages="$packages python3-picamera2"
    missing=""
    for p in $packages; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        apt-get update -qq
        # shellcheck disable=SC2086  # a word list on purpose
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
    fi

    if ! getent passwd framecull >/dev/null; then
        # A real shell (/bin/sh) because the server's puller logs in with a key whose forced
        # command needs one; '*' (not '!') so sshd does not treat the account as locked.
        useradd --system --user-group --home-dir /var/lib/framecull --no-create-home \
            --shell /bin/sh --comment "framecull daemon" framecull
        usermod --password '*' framecull
        echo "created user framecull"
    fi
    getent group video >/dev/null && usermod -a -G video framecull
fi

install -d -m 0755 "$opt" "$opt/bin" "$unit_dir"
install -d -m 0750 "$etc" "$state"
install -d -m 0700 "$state/.ssh"
if [ "$real" = 1 ]; then
    chown root:framecull "$etc"
    chown framecull:framecull "$state" "$state/.ssh"
fi

if [ "$skip_venv" = 0 ]; then
    if [ ! -x "$venv/bin/python" ]; then
        # System site packages: picamera2 and python3-systemd come from apt.
        "${PYTHON:-/usr/bin/python3}" -m venv --system-site-packages "$venv"
        echo "created $venv"
    fi
    constraint=()
    # apt's picamera2 stack (simplejpeg, pidng) is built against numpy 1.x.
    on_raspberry_pi && constraint=("numpy<2")
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${source_spec}[device]" "${constraint[@]}"
    # Keep a copy of the docs next to the install (the unit's Documentation=).
    [ -f "$repo/README.md" ] && put "$repo/README.md" "$opt/README.md" 0644
fi

put "$repo/systemd/framecull@.service" "$unit_dir/framecull@.service" 0644
put "$repo/deploy/pull/pull-only.sh" "$opt/bin/framecull-pull-only" 0755
put "$repo/deploy/examples/camera.toml" "$etc/camera.toml.example" 0644

if [ -n "$camera" ] && [ ! -e "$etc/$camera.toml" ]; then
    # The Pi's camera on a Pi; elsewhere the example's synthetic camera, which runs anywhere (a
    # picamera2 source where picamera2 cannot be installed would be refused at every start).
    kind=synthetic
    on_raspberry_pi && kind=picamera2
    sed -e "s|^camera = \"lot-north\"|camera = \"$camera\"|" \
        -e "s|^root = \"/var/lib/framecull/lot-north\"|root = \"/var/lib/framecull/$camera\"|" \
        -e "s|^kind = \"synthetic\"|kind = \"$kind\"|" \
        "$repo/deploy/examples/camera.toml" >"$etc/$camera.toml.new"
    chmod 0640 "$etc/$camera.toml.new"
    [ "$real" = 1 ] && chown root:framecull "$etc/$camera.toml.new"
    mv "$etc/$camera.toml.new" "$etc/$camera.toml"
    echo "created $etc/$camera.toml"
fi

if [ -n "$camera" ] && [ ! -d "$state/$camera/frames" ]; then
    # The server pulls */frames/: a camera that has kept nothing yet is an empty pull, not an error.
    install -d -m 0750 "$state/$camera" "$state/$camera/frames"
    [ "$real" = 1 ] && chown framecull:framecull "$state/$camera" "$state/$camera/frames"
fi

[ "$real" = 1 ] && systemctl daemon-reload

cam=${camera:-<camera>}
cat <<NEXT
framecull is installed. Next:
  1. edit /etc/framecull/$cam.toml (start from /etc/framecull/camera.toml.example), then
     /opt/framecull/venv/bin/framecull check-config /etc/framecull/$cam.toml
  2. systemctl enable --now framecull@$cam
  3. journalctl -u framecull@$cam -f
  For the server's pull: put its key in /var/lib/framecull/.ssh/authorized_keys as in
  deploy/pull/authorized_keys.example.
NEXT
