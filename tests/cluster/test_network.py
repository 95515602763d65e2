"""The network file: a full file parses to its instances; every bad input is a ConfigError that
says where the problem is; the digest tracks exactly what a process runs."""
from __future__ import annotations

import msgpack
import pytest

from fabric.cluster.network import (
    MAX_FILE_BYTES,
    MAX_INSTANCES,
    MAX_NETWORK_INSTANCES,
    network_from_wire,
    network_to_wire,
    parse_network,
)
from fabric.errors import ConfigError

FULL = """
name = "shop"

[components.producer]
run = "shop.producer:main"
instances = 2
params = { rate = "500", out = "{data}/sent-{index}", at = "{network}/{instance}@{host}#{gen}" }
labels = { zone = "a" }
slots = 2
version = "1"

[components.ledger]
run = "shop.ledger:Ledger"
replicas = 3
partitions = 4
input = "orders"
output = "receipts"
labels = { disk = "ssd" }

[channels.orders]
intermediaries = 3
labels = { zone = "a" }

[channels.receipts]
spread = false
slots = 0
version = "v2"
"""


def _digests(text: str) -> dict[str, str]:
    return {spec.id: spec.digest for spec in parse_network(text).instances}


def _changed(before: str, after: str) -> set[str]:
    """The instance ids whose digest differs between two files with the same instances."""
    old, new = _digests(before), _digests(after)
    assert old.keys() == new.keys()
    return {ident for ident in old if old[ident] != new[ident]}


# --- a valid file ---------------------------------------------------------------------------

def test_full_file_gives_instance_ids_in_file_order():
    network = parse_network(FULL)
    assert network.name == "shop"
    assert network.source == FULL
    assert [spec.id for spec in network.instances] == [
        "producer-0", "producer-1", "ledger-r0", "ledger-r1", "ledger-r2",
        "orders-i0", "orders-i1", "orders-i2", "receipts-i0", "receipts-i1"]


def test_full_file_gives_kinds_groups_and_indexes():
    network = parse_network(FULL)
    assert network.groups() == {
        "producer": ["producer-0", "producer-1"],
        "ledger": ["ledger-r0", "ledger-r1", "ledger-r2"],
        "orders": ["orders-i0", "orders-i1", "orders-i2"],
        "receipts": ["receipts-i0", "receipts-i1"]}
    kinds = {spec.id: (spec.kind, spec.index) for spec in network.instances}
    assert kinds["producer-1"] == ("function", 1)
    assert kinds["ledger-r2"] == ("stateful", 2)
    assert kinds["orders-i0"] == ("intermediary", 0)
    assert kinds["receipts-i1"] == ("intermediary", 1)


def test_function_instance_fields_and_sorted_params():
    spec = parse_network(FULL).by_id()["producer-1"]
    assert spec.run == "shop.producer:main"
    assert spec.params == (("at", "{network}/{instance}@{host}#{gen}"),
                           ("out", "{data}/sent-{index}"), ("rate", "500"))
    assert spec.labels == (("zone", "a"),)
    assert spec.slots == 2
    assert spec.version == "1"
    assert spec.replicas == 0 and spec.channel == "" and spec.input == ""
    assert spec.to_wire()["params"] == {"at": "{network}/{instance}@{host}#{gen}",
                                        "out": "{data}/sent-{index}", "rate": "500"}


def test_stateful_replica_fields():
    spec = parse_network(FULL).by_id()["ledger-r1"]
    assert (spec.run, spec.replicas, spec.partitions) == ("shop.ledger:Ledger", 3, 4)
    assert (spec.input, spec.output) == ("orders", "receipts")
    assert spec.params == ()
    assert spec.labels == (("disk", "ssd"),)
    assert spec.slots == 1 and spec.version == ""


def test_intermediary_fields_and_default_count():
    by_id = parse_network(FULL).by_id()
    assert by_id["orders-i2"].channel == "orders"
    assert by_id["orders-i2"].labels == (("zone", "a"),)
    assert by_id["receipts-i0"].channel == "receipts"
    assert (by_id["receipts-i0"].slots, by_id["receipts-i0"].version) == (0, "v2")
    assert len(parse_network('name = "n"\n[channels.c]\n').instances) == 2


def test_spread_defaults_true_for_replicas_and_intermediaries_false_for_functions():
    spread = {spec.id: spec.spread for spec in parse_network(FULL).instances}
    assert spread["producer-0"] is False
    assert spread["ledger-r0"] is True
    assert spread["orders-i0"] is True
    assert spread["receipts-i0"] is False  # given explicitly
    explicit = parse_network('name = "n"\n[components.f]\nrun = "m:f"\ninstances = 1\n'
                             'spread = true\n')
    assert explicit.instances[0].spread is True


def test_zero_instances_is_a_valid_empty_component():
    network = parse_network('name = "n"\n[components.f]\nrun = "m:f"\ninstances = 0\n')
    assert network.instances == ()


def test_every_instance_has_a_digest():
    digests = _digests(FULL)
    assert all(len(d) == 16 for d in digests.values())
    assert len(set(digests.values())) == len(digests)  # the id is part of what runs


# --- the digest ------------------------------------------------------------------------------

@pytest.mark.parametrize("old, new, changed", [
    ('run = "shop.producer:main"', 'run = "shop.producer:main2"', {"producer-0", "producer-1"}),
    ('rate = "500"', 'rate = "501"', {"producer-0", "producer-1"}),
    ('version = "1"', 'version = "2"', {"producer-0", "producer-1"}),
    ('version = "v2"', 'version = "v3"', {"receipts-i0", "receipts-i1"}),
    ('run = "shop.ledger:Ledger"', 'run = "shop.ledger:Ledger2"',
     {"ledger-r0", "ledger-r1", "ledger-r2"}),
], ids=["run", "params", "version", "channel-version", "stateful-run"])
def test_digest_changes_with_run_params_and_version(old, new, changed):
    assert old in FULL
    assert _changed(FULL, FULL.replace(old, new)) == changed


@pytest.mark.parametrize("old, new", [
    ('labels = { zone = "a" }\nslots', 'labels = { zone = "b" }\nslots'),
    ('labels = { disk = "ssd" }', 'labels = { disk = "hdd", rack = "1" }'),
    ('spread = false', 'spread = true'),
    ('slots = 2', 'slots = 3'),
    ('slots = 0', 'slots = 5'),
    ('replicas = 3\n', 'replicas = 3\nspread = false\n'),
], ids=["labels", "more-labels", "spread", "slots", "channel-slots", "spread-given"])
def test_digest_ignores_labels_spread_and_slots(old, new):
    assert old in FULL
    assert _changed(FULL, FULL.replace(old, new)) == set()


def test_digest_ignores_param_order_in_the_file():
    reordered = FULL.replace(
        'params = { rate = "500", out = "{data}/sent-{index}", at = '
        '"{network}/{instance}@{host}#{gen}" }',
        'params = { at = "{network}/{instance}@{host}#{gen}", out = "{data}/sent-{index}", '
        'rate = "500" }')
    assert reordered != FULL
    assert _changed(FULL, reordered) == set()


# --- the name --------------------------------------------------------------------------------

def test_name_falls_back_to_the_argument():
    text = FULL.replace('name = "shop"\n', "")
    assert parse_network(text, name="fallback").name == "fallback"


def test_name_in_the_file_wins_over_the_argument():
    assert parse_network(FULL, name="other").name == "shop"


def test_no_name_at_all_is_an_error():
    with pytest.raises(ConfigError, match="^name: "):
        parse_network(FULL.replace('name = "shop"\n', ""))


def test_bad_fallback_name_is_an_error():
    with pytest.raises(ConfigError, match="^name: .*'Shop File'"):
        parse_network(FULL.replace('name = "shop"\n', ""), name="Shop File")


# --- rejections ------------------------------------------------------------------------------

def _component(body: str, name: str = "producer") -> str:
    return f'name = "n"\n[components.{name}]\n{body}\n'


FUNC = 'run = "m:f"\ninstances = 1\n'
STATEFUL = 'run = "m:C"\nreplicas = 1\n'
LONG = "a" * 64


def _many_components() -> str:
    count = MAX_NETWORK_INSTANCES // MAX_INSTANCES + 1
    return 'name = "n"\n' + "".join(
        f'[components.c{i}]\nrun = "m:f"\ninstances = {MAX_INSTANCES}\n' for i in range(count))


REJECTED = [
    ("not-toml", 'name = "n"\n[components.producer\n', "not valid TOML"),
    ("not-toml-value", "name = \n", "not valid TOML"),
    ("unknown-top-level", 'name = "n"\nversion = "1"\n', "network: unknown key 'version'"),
    ("components-not-table", 'name = "n"\ncomponents = 3\n', "components: expected a table"),
    ("channels-not-table", 'name = "n"\nchannels = "x"\n', "channels: expected a table"),
    ("component-not-table", 'name = "n"\n[components]\nproducer = 3\n',
     "components.producer: expected a table"),
    ("channel-not-table", 'name = "n"\n[channels]\norders = [1]\n',
     "channels.orders: expected a table"),
    ("component-key-typo", _component(FUNC + 'param = { a = "b" }'),
     "components.producer: unknown key 'param'"),
    ("component-key-typo-2", _component(FUNC + "instance = 2"),
     "components.producer: unknown key 'instance'"),
    ("channel-key-typo", 'name = "n"\n[channels.orders]\nintermediary = 2\n',
     "channels.orders: unknown key 'intermediary'"),
    ("channel-run", 'name = "n"\n[channels.orders]\nrun = "m:f"\n',
     "channels.orders: unknown key 'run'"),
    ("both-instances-and-replicas", _component('run = "m:f"\ninstances = 1\nreplicas = 1'),
     "components.producer: give instances"),
    ("neither-instances-nor-replicas", _component('run = "m:f"'),
     "components.producer: give instances"),
    ("run-missing", _component("instances = 1"), "components.producer.run"),
    ("run-no-colon", _component('run = "m.f"\ninstances = 1'), "components.producer.run"),
    ("run-no-module", _component('run = ":f"\ninstances = 1'), "components.producer.run"),
    ("run-no-attr", _component('run = "m:"\ninstances = 1'), "components.producer.run"),
    ("run-not-string", _component("run = 3\ninstances = 1"), "components.producer.run"),
    ("param-int", _component(FUNC + "params = { rate = 500 }"),
     "components.producer.params.rate: values are strings"),
    ("param-bool", _component(FUNC + "params = { on = true }"),
     "components.producer.params.on: values are strings"),
    ("params-not-table", _component(FUNC + 'params = "rate=5"'),
     "components.producer.params: expected a table"),
    ("unknown-placeholder", _component(FUNC + 'params = { out = "{data}/{nope}" }', "consumer"),
     "components.consumer.params.out: unknown placeholder {nope}"),
    ("empty-placeholder", _component(FUNC + 'params = { out = "x{}" }', "consumer"),
     "components.consumer.params.out: unknown placeholder {}"),
    ("params-on-stateful", _component(STATEFUL + 'params = { a = "b" }', "ledger"),
     "components.ledger.params: a stateful component takes no params"),
    ("partitions-on-function", _component(FUNC + "partitions = 2"),
     "components.producer: partitions, input, output and replace_after are for stateful"),
    ("input-on-function", _component(FUNC + 'input = "orders"'),
     "components.producer: partitions, input, output and replace_after are for stateful"),
    ("output-on-function", _component(FUNC + 'output = "orders"'),
     "components.producer: partitions, input, output and replace_after are for stateful"),
    ("replace-after-on-function", _component(FUNC + "replace_after = 5"),
     "components.producer: partitions, input, output and replace_after are for stateful"),
    ("replace-after-zero", _component(STATEFUL + "replace_after = 0", "ledger"),
     "components.ledger.replace_after: expected seconds"),
    ("replace-after-text", _component(STATEFUL + 'replace_after = "5"', "ledger"),
     "components.ledger.replace_after: expected seconds"),
    ("bad-input-name", _component(STATEFUL + 'input = "Orders"', "ledger"),
     "components.ledger.input: a name is"),
    ("bad-output-name", _component(STATEFUL + "output = 5", "ledger"),
     "components.ledger.output: a name is"),
    ("name-upper-case", 'name = "Shop"\n', "name: a name is"),
    ("name-empty", 'name = ""\n', "name: a name is"),
    ("name-too-long", f'name = "{LONG}"\n', "name: a name is"),
    ("name-starts-with-dash", 'name = "-shop"\n', "name: a name is"),
    ("name-has-dot", 'name = "shop.v1"\n', "name: a name is"),
    ("name-not-string", "name = 5\n", "name: a name is"),
    ("component-name-upper-case", _component(FUNC, "Producer"), "components: .*'Producer'"),
    ("component-name-empty", _component(FUNC, '""'), "components: .*''"),
    ("component-name-too-long", _component(FUNC, LONG), f"components: .*'{LONG}'"),
    ("channel-name-upper-case", 'name = "n"\n[channels.Orders]\n', "channels: .*'Orders'"),
    ("channel-name-too-long", f'name = "n"\n[channels.{LONG}]\n', f"channels: .*'{LONG}'"),
    ("channel-component-clash", _component(FUNC, "orders") + "[channels.orders]\n",
     "channels.orders: the name is taken by components.orders"),
    ("queue-worker-clash", '[queues.jobs]\n[workers.jobs]\nrun = "shop.tasks"\n',
     "workers.jobs: the name is taken by queues.jobs"),
    ("worker-run-with-colon", '[workers.w]\nrun = "shop.tasks:f"\n',
     "workers.w.run: expected a MODULE with @task functions"),
    ("worker-unknown-key", '[workers.w]\nrun = "shop.tasks"\nconcurency = 2\n',
     "workers.w: unknown key 'concurency'"),
    ("queue-lease-zero", '[queues.q]\nlease = 0\n', "queues.q.lease: expected seconds"),
    ("queue-replicas-ten", '[queues.q]\nreplicas = 10\n',
     "queues.q.replicas: expected a whole number from 1 to 9"),
    ("instances-negative", _component('run = "m:f"\ninstances = -1'),
     "components.producer.instances: expected a whole number from 0 to 1000"),
    ("instances-too-many", _component(f'run = "m:f"\ninstances = {MAX_INSTANCES + 1}'),
     "components.producer.instances: expected a whole number from 0 to 1000"),
    ("instances-string", _component('run = "m:f"\ninstances = "2"'),
     "components.producer.instances"),
    ("instances-float", _component('run = "m:f"\ninstances = 2.0'),
     "components.producer.instances"),
    ("instances-bool", _component('run = "m:f"\ninstances = true'),
     "components.producer.instances"),
    ("replicas-zero", _component('run = "m:C"\nreplicas = 0', "ledger"),
     "components.ledger.replicas: expected a whole number from 1 to 9"),
    ("replicas-ten", _component('run = "m:C"\nreplicas = 10', "ledger"),
     "components.ledger.replicas: expected a whole number from 1 to 9"),
    ("partitions-zero", _component(STATEFUL + "partitions = 0", "ledger"),
     "components.ledger.partitions: expected a whole number from 1 to 64"),
    ("partitions-too-many", _component(STATEFUL + "partitions = 65", "ledger"),
     "components.ledger.partitions: expected a whole number from 1 to 64"),
    ("intermediaries-too-many", 'name = "n"\n[channels.orders]\nintermediaries = 65\n',
     "channels.orders.intermediaries: expected a whole number from 0 to 64"),
    ("intermediaries-negative", 'name = "n"\n[channels.orders]\nintermediaries = -1\n',
     "channels.orders.intermediaries"),
    ("slots-too-many", _component(FUNC + "slots = 1001"),
     "components.producer.slots: expected a whole number from 0 to 1000"),
    ("slots-negative", 'name = "n"\n[channels.orders]\nslots = -1\n', "channels.orders.slots"),
    ("spread-not-bool", _component(FUNC + 'spread = "yes"'),
     "components.producer.spread: expected true or false"),
    ("version-not-string", 'name = "n"\n[channels.orders]\nversion = 2\n',
     "channels.orders.version: expected a string"),
    ("labels-not-table", _component(FUNC + 'labels = ["ssd"]'),
     "components.producer.labels: expected a table"),
    ("label-not-string", _component(FUNC + "labels = { disk = 1 }"),
     "components.producer.labels.disk: values are strings"),
    ("too-many-instances-in-total", _many_components(),
     f"a network has at most {MAX_NETWORK_INSTANCES} instances, this one asks for 11000"),
    ("file-too-large", 'name = "n"\n#' + "x" * MAX_FILE_BYTES + "\n",
     f"a network file is at most {MAX_FILE_BYTES} bytes"),
]


@pytest.mark.parametrize("text, where", [(t, w) for _, t, w in REJECTED],
                         ids=[i for i, _, _ in REJECTED])
def test_rejected_with_where_the_problem_is(text, where):
    with pytest.raises(ConfigError) as caught:
        parse_network(text, name="fallback")
    assert caught.match(where)
    assert isinstance(caught.value, ValueError)  # ConfigError is also a ValueError


def test_size_limit_counts_bytes_not_characters():
    """A file of multi-byte characters over the limit in bytes is rejected even though it
    has fewer characters than the limit."""
    text = 'name = "n"\n#' + "é" * (MAX_FILE_BYTES // 2 + 1) + "\n"
    assert len(text) < MAX_FILE_BYTES
    with pytest.raises(ConfigError, match="at most"):
        parse_network(text)


def test_exactly_the_instance_limit_is_accepted():
    text = 'name = "n"\n' + "".join(
        f'[components.c{i}]\nrun = "m:f"\ninstances = {MAX_INSTANCES}\n'
        for i in range(MAX_NETWORK_INSTANCES // MAX_INSTANCES))
    assert len(parse_network(text).instances) == MAX_NETWORK_INSTANCES


# --- on the wire -----------------------------------------------------------------------------

def test_wire_round_trip():
    network = parse_network(FULL)
    back = network_from_wire(network_to_wire(network))
    assert back == network
    assert [s.digest for s in back.instances] == [s.digest for s in network.instances]


def test_wire_keeps_the_fallback_name():
    network = parse_network(FULL.replace('name = "shop"\n', ""), name="fallback")
    assert network_from_wire(network_to_wire(network)).name == "fallback"


@pytest.mark.parametrize("value", [
    b"",
    b"\xc1",
    b"not msgpack at all \xff\xfe",
    msgpack.packb([1, 2, 3]),
    msgpack.packb("source"),
    msgpack.packb(7),
    msgpack.packb(None),
    msgpack.packb({"name": "n"}),
    msgpack.packb({"source": 'name = "n"\n'}),
    msgpack.packb({"name": "n", "source": 5}),
    msgpack.packb({"name": b"n", "source": b'name = "n"\n'}, use_bin_type=True),
    msgpack.packb({"name": "n", "source": 'name = "n"\n'}) + b"\x00",
    b"\x81" * 100_000,
], ids=["empty", "reserved-byte", "text", "list", "string", "int", "nil", "no-source",
        "no-name", "source-int", "bytes-fields", "trailing-bytes", "deep-nesting"])
def test_wire_garbage_is_a_config_error(value):
    with pytest.raises(ConfigError, match="a stored network does not decode"):
        network_from_wire(value)


def test_wire_with_a_bad_source_is_checked_again():
    value = msgpack.packb({"name": "n", "source": 'name = "n"\nnope = 1\n'})
    with pytest.raises(ConfigError, match="network: unknown key 'nope'"):
        network_from_wire(value)


def test_queues_and_workers():
    """A queue is a replica group (spread, one instance per replica); workers name their
    queue, concurrency and types."""
    network = parse_network('''
name = "shop"
[queues.orders]
replicas = 3
lease = 5
[workers.billing]
run = "shop.tasks"
queue = "orders"
instances = 2
concurrency = 8
types = "bill,refund"
''')
    queue = [s for s in network.instances if s.kind == "queue"]
    workers = [s for s in network.instances if s.kind == "worker"]
    assert [s.id for s in queue] == ["orders-q0", "orders-q1", "orders-q2"]
    assert all(s.spread and s.queue == "orders" and s.lease == 5.0 and s.replicas == 3
               for s in queue)
    assert [s.id for s in workers] == ["billing-0", "billing-1"]
    assert all(not s.spread and s.queue == "orders" and s.concurrency == 8
               and s.types == "bill,refund" and s.run == "shop.tasks" for s in workers)
