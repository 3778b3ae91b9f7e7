"""Text pictures of the target graph: Graphviz dot and Mermaid, stale targets highlighted."""

from __future__ import annotations


def to_dot(dag, labels, stale=frozenset()) -> str:
    lines = ["digraph buildml {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor="#e8f0fe"];']
    for label in labels:
        fill = ', fillcolor="#fde2e1"' if label in stale else ""
        lines.append(f'  "{label}" [label="{label}"{fill}];')
    chosen = set(labels)
    for a, b in sorted(dag.edges()):
        if a in chosen and b in chosen:
            lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(dag, labels, stale=frozenset()) -> str:
    ids = {label: f"n{i}" for i, label in enumerate(labels)}
    lines = ["graph LR"]
    for label, nid in ids.items():
        lines.append(f'  {nid}["{label}"]')
    for a, b in sorted(dag.edges()):
        if a in ids and b in ids:
            lines.append(f"  {ids[a]} --> {ids[b]}")
    if stale:
        lines.append("  classDef stale fill:#fde2e1,stroke:#c00")
        lines.append("  class " + ",".join(ids[l] for l in labels if l in stale) + " stale")
    return "\n".join(lines) + "\n"
