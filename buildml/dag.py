"""A small directed graph for the hot path; networkx (slow to import) is loaded only for queries and cycle reports."""

from __future__ import annotations

import heapq


class Dag:
    """Edges point from a producer to its consumers. The method names follow networkx's DiGraph."""

    def __init__(self):
        self.pred: dict = {}
        self.succ: dict = {}

    def add_nodes_from(self, nodes) -> None:
        for n in nodes:
            self.pred.setdefault(n, {})
            self.succ.setdefault(n, {})

    def add_edge(self, a, b) -> None:
        self.add_nodes_from((a, b))
        self.succ[a][b] = None
        self.pred[b][a] = None

    def remove_node(self, n) -> None:
        for p in self.pred.pop(n, {}):
            self.succ[p].pop(n, None)
        for s in self.succ.pop(n, {}):
            self.pred[s].pop(n, None)

    def predecessors(self, n):
        return iter(self.pred[n])

    def successors(self, n):
        return iter(self.succ[n])

    def in_degree(self, n) -> int:
        return len(self.pred[n])

    def edges(self):
        return [(a, b) for a, bs in self.succ.items() for b in bs]

    @property
    def nodes(self):
        return list(self.pred)

    def __contains__(self, n) -> bool:
        return n in self.pred

    def __iter__(self):
        return iter(self.pred)

    def __len__(self) -> int:
        return len(self.pred)

    def subgraph(self, nodes) -> "Dag":
        keep = set(nodes)
        sub = Dag()
        sub.add_nodes_from(n for n in self.pred if n in keep)
        for n in sub.pred:
            for p in self.pred[n]:
                if p in keep:
                    sub.succ[p][n] = None
                    sub.pred[n][p] = None
        return sub

    def ancestors(self, n) -> set:
        return _reach(self.pred, [n])

    def descendants(self, n) -> set:
        return _reach(self.succ, [n])

    def topological_order(self) -> list:
        """Kahn's algorithm, smallest node first among the ready ones (stable output); raises ValueError on a cycle."""
        indeg = {n: len(p) for n, p in self.pred.items()}
        ready = [n for n, d in indeg.items() if d == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            n = heapq.heappop(ready)
            order.append(n)
            for s in self.succ[n]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    heapq.heappush(ready, s)
        if len(order) != len(indeg):
            raise ValueError("graph has a cycle")
        return order

    def to_networkx(self):
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(self.pred)
        g.add_edges_from(self.edges())
        return g


def _reach(adjacency: dict, start) -> set:
    seen: set = set()
    frontier = list(start)
    while frontier:
        for m in adjacency[frontier.pop()]:
            if m not in seen:
                seen.add(m)
                frontier.append(m)
    return seen
