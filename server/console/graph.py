"""A workflow version's graph laid out in layers, ready to draw as SVG (server-side, no JS).

The layout is grandalf's Sugiyama implementation (pure Python, the layered "dot" algorithm:
rank assignment, crossing reduction by barycentres over several sweeps, coordinate assignment,
edges routed through dummy nodes), the one layered-layout package on PyPI that needs no
Graphviz binary or JavaScript runtime. Flows run top to bottom, so joins and branches read in
the order steps run. A version's graph never changes once published, so layouts are cached by
the graph's shape: a page showing an execution of a 50-step workflow pays the layout once.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Final

import msgspec
from grandalf.graphs import Edge as LayoutEdge
from grandalf.graphs import Graph, Vertex
from grandalf.layouts import SugiyamaLayout

NODE_WIDTH: Final = 176
NODE_HEIGHT: Final = 46
LAYER_GAP: Final = 46  # vertical room for edges and their branch labels between layers
NODE_GAP: Final = 28
MARGIN: Final = 16
COMPONENT_GAP: Final = 48
LABEL_CHARS: Final = 22
LAYOUT_SWEEPS: Final = 6
CACHED_LAYOUTS: Final = 256


class GraphNode(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    kind: str
    detail: str
    """What the step does: its action key, or its kind for flow steps."""


class GraphEdge(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    target: str
    branch_key: str


class NodeBox(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    kind: str
    label: str
    detail: str
    x: float
    y: float
    """Top-left corner."""


class EdgeLine(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    target: str
    branch_key: str
    path: str
    """An SVG path (`M x y L x y ...`) from the source's bottom to the target's top."""
    label_x: float
    label_y: float


class Drawing(msgspec.Struct, frozen=True, kw_only=True):
    width: float
    height: float
    node_width: int
    node_height: int
    nodes: list[NodeBox]
    edges: list[EdgeLine]


class _Size:
    """The `view` grandalf reads a vertex's size from, and writes its centre (`xy`) to."""

    def __init__(self) -> None:
        self.w = NODE_WIDTH
        self.h = NODE_HEIGHT
        self.xy: tuple[float, float] = (0.0, 0.0)


class _Route:
    """The `view` grandalf writes an edge's points to."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def setpath(self, points: list[tuple[float, float]]) -> None:
        self.points = list(points)


def draw(nodes: Sequence[GraphNode], edges: Sequence[GraphEdge]) -> Drawing:
    """The laid-out graph; edges naming unknown steps are left out."""
    return _draw(tuple(nodes), tuple(edges))


@lru_cache(maxsize=CACHED_LAYOUTS)
def _draw(nodes: tuple[GraphNode, ...], edges: tuple[GraphEdge, ...]) -> Drawing:
    vertices = {node.key: Vertex(node.key) for node in nodes}
    for vertex in vertices.values():
        vertex.view = _Size()
    laid: list[tuple[GraphEdge, LayoutEdge]] = []
    for edge in edges:
        if edge.source in vertices and edge.target in vertices and edge.source != edge.target:
            layout_edge = LayoutEdge(vertices[edge.source], vertices[edge.target])
            layout_edge.view = _Route()
            laid.append((edge, layout_edge))
    graph = Graph(list(vertices.values()), [layout_edge for _, layout_edge in laid])
    offset_x = 0.0
    shift: dict[str, tuple[float, float]] = {}
    for component in graph.C:
        layout = SugiyamaLayout(component)
        layout.xspace, layout.yspace = NODE_GAP, LAYER_GAP
        roots = [v for v in component.sV if not v.e_in()]
        layout.init_all(roots=roots or None)
        layout.draw(LAYOUT_SWEEPS)
        xs = [v.view.xy[0] for v in component.sV]
        ys = [v.view.xy[1] for v in component.sV]
        left, top = min(xs) - NODE_WIDTH / 2, min(ys) - NODE_HEIGHT / 2
        for vertex in component.sV:
            shift[vertex.data] = (offset_x + MARGIN - left, MARGIN - top)
        offset_x += max(xs) - min(xs) + NODE_WIDTH + COMPONENT_GAP
    boxes = [_box(node, vertices[node.key].view.xy, shift[node.key]) for node in nodes]
    lines = [_line(edge, layout_edge.view.points, shift[edge.source]) for edge, layout_edge in laid]
    return Drawing(
        width=max((b.x for b in boxes), default=0) + NODE_WIDTH + MARGIN,
        height=max((b.y for b in boxes), default=0) + NODE_HEIGHT + MARGIN,
        node_width=NODE_WIDTH,
        node_height=NODE_HEIGHT,
        nodes=boxes,
        edges=lines,
    )


def _box(node: GraphNode, centre: tuple[float, float], shift: tuple[float, float]) -> NodeBox:
    label = node.key if len(node.key) <= LABEL_CHARS else node.key[: LABEL_CHARS - 1] + "…"
    return NodeBox(
        key=node.key,
        kind=node.kind,
        label=label,
        detail=node.detail[:LABEL_CHARS],
        x=round(centre[0] + shift[0] - NODE_WIDTH / 2, 1),
        y=round(centre[1] + shift[1] - NODE_HEIGHT / 2, 1),
    )


def _line(
    edge: GraphEdge, points: list[tuple[float, float]], shift: tuple[float, float]
) -> EdgeLine:
    moved = [(x + shift[0], y + shift[1]) for x, y in points]
    # grandalf gives centre to centre: start at the source's bottom, end at the target's top.
    moved[0] = (moved[0][0], moved[0][1] + NODE_HEIGHT / 2)
    moved[-1] = (moved[-1][0], moved[-1][1] - NODE_HEIGHT / 2)
    path = " ".join(f"{'M' if i == 0 else 'L'} {x:.1f} {y:.1f}" for i, (x, y) in enumerate(moved))
    # The label sits just below the source, on the edge's first segment.
    (x0, y0), (x1, y1) = moved[0], moved[1]
    ratio = min(1.0, 14 / max(1.0, abs(y1 - y0)))
    return EdgeLine(
        source=edge.source,
        target=edge.target,
        branch_key=edge.branch_key,
        path=path,
        label_x=round(x0 + (x1 - x0) * ratio + 4, 1),
        label_y=round(y0 + (y1 - y0) * ratio + 4, 1),
    )
