# The pops image: one image, several roles (api + all workers, or one queue's worker).
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY . .
ARG POPS_CODE_COMMIT=unknown
ENV POPS_CODE_COMMIT=${POPS_CODE_COMMIT}
ENTRYPOINT ["node", "bin/pops.js"]
CMD ["serve"]
