"""The console's layered graph layout: every step placed once, no two boxes overlapping,
edges top to bottom, on a 50-step graph with branches and joins."""

from __future__ import annotations

from server.console.graph import NODE_HEIGHT, NODE_WIDTH, GraphEdge, GraphNode, draw


def fifty_steps() -> tuple[list[GraphNode], list[GraphEdge]]:
    nodes = [GraphNode(key=f"s{n:02d}", kind="action", detail="transform") for n in range(50)]
    edges = [GraphEdge(source=f"s{n - 1:02d}", target=f"s{n:02d}", branch_key="default")
             for n in range(1, 50)]  # fmt: skip
    edges += [GraphEdge(source=f"s{n:02d}", target=f"s{n + 3:02d}", branch_key="false")
              for n in range(0, 47, 5)]  # fmt: skip
    return nodes, edges


def test_fifty_steps_with_joins_are_laid_out_without_overlaps() -> None:
    nodes, edges = fifty_steps()
    drawing = draw(nodes, edges)
    assert sorted(box.key for box in drawing.nodes) == sorted(node.key for node in nodes)
    boxes = drawing.nodes
    for index, a in enumerate(boxes):
        for b in boxes[index + 1 :]:
            assert abs(a.x - b.x) >= NODE_WIDTH or abs(a.y - b.y) >= NODE_HEIGHT, (a, b)
    where = {box.key: box for box in boxes}
    for edge in edges:  # flows read top to bottom
        assert where[edge.source].y < where[edge.target].y
    assert len(drawing.edges) == len(edges)
    assert all(box.x >= 0 and box.y >= 0 for box in boxes)
    assert drawing.width >= max(box.x for box in boxes) + NODE_WIDTH


def test_steps_without_edges_and_unknown_edge_ends_are_drawn_safely() -> None:
    nodes = [
        GraphNode(key="a", kind="action", detail="x"),
        GraphNode(key="b", kind="delay", detail="delay"),
    ]
    drawing = draw(nodes, [GraphEdge(source="a", target="ghost", branch_key="default")])
    assert {box.key for box in drawing.nodes} == {"a", "b"}
    assert drawing.edges == []
