"""The broker URL list and the failover choice (fleet_protocol.broker_urls): pure logic, no broker."""

from __future__ import annotations

import pytest

from fleet_protocol.broker_urls import BrokerFailover, parse_broker_urls
from fleet_protocol.retry import RetryPolicy

NODES = ("mqtt://n1:1883", "mqtt://n2:1883", "mqtt://n3:1883")


def test_comma_lists_and_repeated_urls_give_one_list_with_default_ports():
    brokers = parse_broker_urls(["mqtt://n1,mqtt://n2:1884", "tcp://n4"])
    assert [(b.host, b.port, b.tls) for b in brokers] == [("n1", 1883, False), ("n2", 1884, False),
                                                          ("n4", 1883, False)]
    assert parse_broker_urls(["mqtts://n1"])[0].port == 8883


def test_mixing_plain_and_tls_brokers_is_refused():
    with pytest.raises(ValueError, match="mix mqtt:// and mqtts://"):
        parse_broker_urls(["mqtts://n1:8883", "mqtt://n2:1883"])


@pytest.mark.parametrize("urls", [[], [""], ["http://n1"], ["mqtt://n1:99999"], ["mqtt://n1", "mqtt://n1:1883"]])
def test_bad_broker_lists_are_refused_with_a_reason(urls):
    with pytest.raises(ValueError, match="broker"):
        parse_broker_urls(urls)


def test_each_link_walks_the_cluster_in_its_own_order_so_a_dead_nodes_devices_spread():
    brokers = parse_broker_urls(NODES)
    links = [BrokerFailover(brokers, order=order) for order in ([2, 0, 1], [2, 1, 0], [0, 1, 2], [1, 2, 0])]
    assert {link.current.host for link in links} == {"n1", "n2", "n3"}  # the first node is the link's draw
    on_n3 = [link for link in links if link.current.host == "n3"]
    for link in on_n3:  # n3 dies: each of its links moves to the next node of its own order
        link.failed(draw=0.5)
    assert {link.current.host for link in on_n3} == {"n1", "n2"}


def test_an_order_that_is_not_a_permutation_is_refused():
    with pytest.raises(ValueError, match="permutation"):
        BrokerFailover(parse_broker_urls(NODES), order=[0, 0, 1])


def test_a_failed_attempt_moves_to_the_next_node_with_growing_full_jitter_backoff():
    failover = BrokerFailover(parse_broker_urls(NODES), order=[0, 1, 2],
                              policy=RetryPolicy(base_delay_s=1.0, max_delay_s=8.0))
    waits, hosts = [], []
    for _ in range(6):
        waits.append(failover.failed(draw=1.0))
        hosts.append(failover.current.host)
    assert hosts == ["n2", "n3", "n1", "n2", "n3", "n1"]
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]  # draw 1.0: the ceiling, capped at max_delay_s
    assert failover.failed(draw=0.25) == 2.0  # full jitter: draw x ceiling


def test_a_working_node_is_sticky_and_its_drop_is_retried_after_a_jittered_short_wait():
    failover = BrokerFailover(parse_broker_urls(NODES), order=[1, 2, 0],
                              policy=RetryPolicy(base_delay_s=1.0, max_delay_s=30.0))
    failover.failed(draw=0.5)
    failover.failed(draw=0.5)
    working = failover.current
    failover.connected()
    waits = {failover.dropped(draw=draw) for draw in (0.0, 0.3, 0.9)}
    assert failover.current == working  # back to the node that worked first
    assert waits == {0.0, 0.3, 0.9}  # spread by the draw: the devices of a dead node do not come back together
    assert failover.failed(draw=1.0) == 1.0  # the back-off started afresh after the CONNACK
