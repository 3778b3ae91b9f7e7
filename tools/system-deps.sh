#!/usr/bin/env bash
# System packages the test suite needs (Debian/Ubuntu), installed before `pip install` by the README's test command
# (and so by CI). As root it runs apt-get directly, else through sudo. Elsewhere: install the same tools by hand
# (tmux, chromium, graphviz, git, busybox, debootstrap, docker-registry, OpenSSH server and client) and run pytest.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" != 0 ]; then
  exec sudo --preserve-env=DEBIAN_FRONTEND "$0" "$@"
fi
if ! command -v apt-get >/dev/null; then
  echo "tools/system-deps.sh: no apt-get here; install tmux, chromium, graphviz, git, busybox, debootstrap," \
       "docker-registry and OpenSSH (server and client) with this system's package manager, then run the README's" \
       "test command without this step" >&2
  exit 1
fi
apt-get update -qq
# UI tests (issue 11): the live view under tmux, the HTML report in headless Chromium, graph images via Graphviz.
apt-get install -y -qq --no-install-recommends tmux chromium graphviz fonts-liberation git
# Container tests (issue 3): tools/base-images.sh makes the local base images (no registry) from these.
apt-get install -y -qq --no-install-recommends busybox-static debootstrap
# Base-image pins and push: true (issues 3, 6) are tested against a real local registry (the distribution server).
apt-get install -y -qq --no-install-recommends docker-registry
# ssh:// engines (issue 19): a real sshd on loopback reaching this machine's engine, through the OpenSSH client.
apt-get install -y -qq --no-install-recommends openssh-server openssh-client
