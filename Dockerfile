# syntax=docker/dockerfile:1
# Build: docker build -t berth:0.1.0 .   Runs `berth <command>` as a non-root user.
# Without a Docker engine, `npm run image` (scripts/build-image.ts) builds the equivalent of the
# runtime stage as dist/image/berth-0.1.0.oci.tar: one reproducible layer, no shell, node at
# /usr/local/bin/node; import it with `ctr -n k8s.io images import` or push it with skopeo.
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# 65532: the conventional nonroot uid; the manifests run with a read-only root filesystem.
USER 65532:65532
EXPOSE 5000 8080
# The node flags are scripts/node-flags.ts's: keep the two the same.
ENTRYPOINT ["node", "--max-semi-space-size=1", "dist/cli.js"]
CMD ["registry", "--listen", "0.0.0.0:5000", "--storage-dir", "/var/lib/berth"]
