# syntax=docker/dockerfile:1
# synpass agent image: the addon is built against libmnl, libbpf and libsodium, and the kernel programs
# compiled with clang, in a full image; the runtime image
# carries only node, the built agent, its production dependencies and the runtime libraries.

FROM node:20-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmnl-dev libbpf-dev libsodium-dev clang libpcap-dev python3 make g++ pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
COPY native ./native
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY agent ./agent
COPY policy ./policy
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmnl0 libbpf1 libsodium23 iptables nftables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/synpass
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/native/build/Release/synpass_nfq.node /src/native/build/Release/fast_path.bpf.o /src/native/build/Release/listener_sweep.bpf.o ./native/build/Release/
COPY policy ./policy
# iptables needs uid 0 for its tables and lock; the DaemonSet and the systemd unit cut the
# capabilities down to BPF, NET_ADMIN and NET_RAW.
USER 0
# The agent's memory budget (docs/operations.md, Memory): a held heap keeps RSS under 200 MiB.
ENV NODE_OPTIONS="--max-old-space-size=128 --max-semi-space-size=8"
EXPOSE 9464
ENTRYPOINT ["node", "/opt/synpass/dist/agent/src/cli/main.js"]
CMD ["agent", "run", "--config", "/etc/synpass/config/agent.yaml"]
