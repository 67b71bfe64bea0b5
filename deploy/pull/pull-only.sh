#!/bin/sh
# The forced command of the server's pull key on a device (installed as
# /opt/framecull/bin/framecull-pull-only; see authorized_keys.example):
#
#   command="/opt/framecull/bin/framecull-pull-only /var/lib/framecull",restrict ssh-ed25519 AAAA... puller
#
# The key may only pull <camera>/frames/... under DIR, removing what it pulled. Everything else
# is refused: a push (any write), a shell command, a path outside a frames/ directory.
#
# Why not plain `rrsync -ro DIR`: -ro implies -no-del, which refuses --remove-source-files.
# Why not plain `rrsync DIR`: that would accept pushes, and pulls (with removal) of memory.sqlite
# or .ssh/. So this script admits only a sender-side rsync of frames/ paths with a short list of
# long options, then hands over to rrsync, which checks the rest and confines paths to DIR.
set -eu

dir=${1:?usage: framecull-pull-only DIR}
cmd=${SSH_ORIGINAL_COMMAND:-}

refuse() {
    echo "framecull-pull-only: refused: $*" >&2
    exit 1
}

case $cmd in
    "rsync --server --sender "*) ;;
    *) refuse "this key may only pull <camera>/frames/ with rsync" ;;
esac
# No backslashes (rrsync unescapes them), quotes, braces or other globbing beyond '*'.
case $cmd in
    *[!A-Za-z0-9._/=,+*\ -]*) refuse "unexpected character in the command" ;;
esac

# A path CAMERA/frames/... must not pass through a symbolic link from frames/ down: a link on the
# device (frames/parent -> ..) would lead out of frames/, to memory.sqlite and beyond. (rrsync
# confines paths to DIR and refuses -L/-k, which would follow links inside a pulled tree.)
no_links() {
    camera=${1%%/*}
    set +f  # CAMERA may be '*': expand it here, once
    for camera_dir in "$dir"/$camera; do
        set -f
        sub=$camera_dir
        old_ifs=$IFS
        IFS=/
        for part in ${1#*/}; do
            [ -n "$part" ] || continue
            sub=$sub/$part
            if [ -L "$sub" ]; then
                refuse "$1 passes through the symbolic link ${sub#"$dir"/}"
            fi
        done
        IFS=$old_ifs
    done
    set -f
}

set -f  # the words below are checked, never globbed here
# shellcheck disable=SC2086  # split into words on purpose
set -- $cmd
shift  # "rsync"
seen_dot=0
paths=0
for arg in "$@"; do
    if [ "$seen_dot" = 1 ]; then
        case /$arg/ in
            */../*) refuse "$arg" ;;
        esac
        printf '%s\n' "$arg" | grep -Eq '^([A-Za-z0-9_-][A-Za-z0-9._-]*|\*)/frames(/[A-Za-z0-9._-]*)*$' ||
            refuse "$arg is not inside <camera>/frames/"
        no_links "$arg"
        paths=$((paths + 1))
        continue
    fi
    case $arg in
        .) seen_dot=1 ;;
        --server | --sender | --remove-source-files | --remove-sent-files | --relative | \
            --no-implied-dirs | --ignore-missing-args | --numeric-ids | --size-only | \
            --ignore-times | --one-file-system | --safe-links | --new-compress | --stats | \
            --timeout=* | --bwlimit=* | --min-size=* | --max-size=* | --compress-level=* | \
            --compress-choice=* | --checksum-choice=* | --skip-compress=* | --modify-window=*) ;;
        --*) refuse "option $arg" ;;  # e.g. --files-from, --log-file, --only-write-batch
        -*) ;;                        # short options: rrsync checks them
        *) refuse "$arg" ;;
    esac
done
[ "$paths" -gt 0 ] || refuse "no path to pull"

exec /usr/bin/rrsync "$dir"
