"""Free ports: distinct within one call, and free (bindable) once returned."""

import socket

from s3ray.ports import free_ports


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(20)
    assert len(set(ports)) == 20
    for host in ("127.0.0.1", ""):
        [port] = free_ports(1, host=host)
        with socket.socket() as s:
            s.bind((host, port))
