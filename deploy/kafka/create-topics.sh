#!/usr/bin/env bash
# Create tierflow's topics with explicit partitions and replication; existing topics are kept.
# Run once by the kafka-init service of docker-compose.yml, inside the apache/kafka image.
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
TOPICS=/opt/kafka/bin/kafka-topics.sh

create() {
  local name="$1" partitions="$2"
  "$TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" \
    --replication-factor "$REPLICATION_FACTOR" \
    --config min.insync.replicas="$MIN_INSYNC_REPLICAS" \
    --config unclean.leader.election.enable=false \
    --config retention.ms=-1
  echo "topic $name ready"
}

# Events and tier changes are keyed by customer_id: the partition count caps how many
# graders work in parallel, and changing it later moves customers between partitions.
create "$TOPIC_EVENTS" "$EVENTS_PARTITIONS"
create "$TOPIC_TIER_CHANGES" "$EVENTS_PARTITIONS"
create "$TOPIC_DLQ" 1
