"""Build the immutable cluster view (pgpool.router.ClusterView) from shared memory."""

from pgpool.router import ClusterView, NodeView
from pgpool.state import shm as S


def build_view(shm, cfg) -> ClusterView:
    h = shm.header
    nodes = []
    for b in cfg.backends:
        slot = shm.backends[b.node_id]
        nodes.append(NodeView(id=b.node_id, status=S.STATUS_NAMES.get(slot.status, "unused"),
                              role=S.ROLE_NAMES.get(slot.role, "standby"), weight=slot.weight,
                              standby_delay=slot.standby_delay))
    primary = h.primary_node_id if h.primary_node_id >= 0 else None
    return ClusterView.of(nodes, primary, cfg.clustering_mode, h.generation)


def restrict(view: ClusterView, node_ids: set) -> ClusterView:
    """The view as one session sees it: nodes it has no connection to count as down."""
    import dataclasses
    if all(n.id in node_ids or n.status not in ("up", "waiting") for n in view.nodes):
        return view
    nodes = [n if n.id in node_ids else dataclasses.replace(n, status="down") for n in view.nodes]
    return ClusterView.of(nodes, view.primary_node_id, view.clustering_mode, view.generation)
