# One raftqueue node. docker-compose.cluster.yml runs three of these; any single `docker run` needs the same
# RAFTQUEUE_* settings (see README, "Configuration").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RAFTQUEUE_HTTP_ADDR=0.0.0.0:8081 \
    RAFTQUEUE_RAFT_BIND=0.0.0.0:9081 \
    RAFTQUEUE_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY raftqueue ./raftqueue
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /data raftqueue \
 && mkdir -p /data && chown raftqueue /data

USER raftqueue
VOLUME ["/data"]
EXPOSE 8081 9081
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/live', timeout=2)"
ENTRYPOINT ["raftqueue"]
CMD ["serve"]
