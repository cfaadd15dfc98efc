"""The DuckDB ledger's tables, in SQL and as the Arrow schemas bulk writes are built in.

The Arrow field order is the table's column order, so a batch inserts with
``INSERT INTO t SELECT * FROM batch``.
"""

import pyarrow as pa

__all__ = [
    "CALLS_ARROW",
    "DDL",
    "EPISODES_ARROW",
    "EVENTS_ARROW",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
]

SCHEMA_VERSION = 4

#: Statements that bring a ledger of schema ``v`` to ``v + 1``; a writer applies them on
#: open. Each only adds, so a reader of an old file sees the old columns and the record
#: types fill the new ones with their defaults.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE calls ADD COLUMN completion_text VARCHAR DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN temperature DOUBLE",
        "ALTER TABLE calls ADD COLUMN top_p DOUBLE",
    ),
    2: ("ALTER TABLE episodes ADD COLUMN answer VARCHAR",),
    3: ("ALTER TABLE episodes ADD COLUMN reward_detail VARCHAR",),
}

TABLES = ("meta", "events", "runs", "calls", "episodes")

DDL = (
    """
    CREATE TABLE meta (
        key VARCHAR PRIMARY KEY,
        value VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE events (
        run_id VARCHAR NOT NULL,
        seq BIGINT NOT NULL,
        ts DOUBLE NOT NULL,
        type VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        payload JSON NOT NULL,
        prev_hash VARCHAR NOT NULL,
        hash VARCHAR NOT NULL,
        PRIMARY KEY (run_id, seq)
    )
    """,
    """
    CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        head_seq BIGINT NOT NULL,
        head_hash VARCHAR NOT NULL,
        updated_ts DOUBLE NOT NULL
    )
    """,
    # No key on the bulk tables: an index would slow every rollout's bulk write, and
    # uniqueness of an episode's calls is the gateway's to guarantee.
    """
    CREATE TABLE calls (
        run_id VARCHAR NOT NULL,
        iteration INTEGER NOT NULL,
        episode_id VARCHAR NOT NULL,
        call_index INTEGER NOT NULL,
        ts DOUBLE NOT NULL,
        harness_commit VARCHAR NOT NULL,
        adapter_tag VARCHAR,
        messages_json VARCHAR NOT NULL,
        prompt_ids INTEGER[] NOT NULL,
        completion_ids INTEGER[] NOT NULL,
        logprobs FLOAT[] NOT NULL,
        finish_reason VARCHAR NOT NULL,
        latency_ms DOUBLE NOT NULL,
        completion_text VARCHAR DEFAULT '',
        temperature DOUBLE,
        top_p DOUBLE
    )
    """,
    """
    CREATE TABLE episodes (
        run_id VARCHAR NOT NULL,
        iteration INTEGER NOT NULL,
        purpose VARCHAR NOT NULL,
        split VARCHAR NOT NULL,
        episode_id VARCHAR NOT NULL,
        item_id VARCHAR NOT NULL,
        reward DOUBLE,
        status VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        n_calls INTEGER NOT NULL,
        duration_ms DOUBLE NOT NULL,
        answer VARCHAR,
        reward_detail VARCHAR
    )
    """,
)

EVENTS_ARROW = pa.schema(
    [
        ("run_id", pa.string()),
        ("seq", pa.int64()),
        ("ts", pa.float64()),
        ("type", pa.string()),
        ("version", pa.int32()),
        ("payload", pa.string()),
        ("prev_hash", pa.string()),
        ("hash", pa.string()),
    ]
)

CALLS_ARROW = pa.schema(
    [
        ("run_id", pa.string()),
        ("iteration", pa.int32()),
        ("episode_id", pa.string()),
        ("call_index", pa.int32()),
        ("ts", pa.float64()),
        ("harness_commit", pa.string()),
        ("adapter_tag", pa.string()),
        ("messages_json", pa.string()),
        ("prompt_ids", pa.list_(pa.int32())),
        ("completion_ids", pa.list_(pa.int32())),
        ("logprobs", pa.list_(pa.float32())),
        ("finish_reason", pa.string()),
        ("latency_ms", pa.float64()),
        ("completion_text", pa.string()),
        ("temperature", pa.float64()),
        ("top_p", pa.float64()),
    ]
)

EPISODES_ARROW = pa.schema(
    [
        ("run_id", pa.string()),
        ("iteration", pa.int32()),
        ("purpose", pa.string()),
        ("split", pa.string()),
        ("episode_id", pa.string()),
        ("item_id", pa.string()),
        ("reward", pa.float64()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("n_calls", pa.int32()),
        ("duration_ms", pa.float64()),
        ("answer", pa.string()),
        ("reward_detail", pa.string()),
    ]
)
