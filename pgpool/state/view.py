"""Build the immutable cluster view (pgpool.router.ClusterView) from shared memory."""

from pgpool.state import shm as S


def build_view(shm, cfg):
    from pgpool.router import ClusterView, NodeView
    h = shm.header
    nodes = []
    for b in cfg.backends:
        slot = shm.backends[b.node_id]
        nodes.append(NodeView(node_id=b.node_id, status=S.STATUS_NAMES.get(slot.status, "unused"),
                              role=S.ROLE_NAMES.get(slot.role, "standby"), weight=slot.weight,
                              standby_delay=slot.standby_delay))
    return ClusterView(nodes=tuple(nodes), primary_node_id=h.primary_node_id,
                       main_node_id=h.main_node_id, clustering_mode=cfg.clustering_mode)


def restrict(view, node_ids: set):
    """The view as one session sees it: nodes it has no connection to count as down."""
    import dataclasses
    if all(n.node_id in node_ids or n.status not in ("up", "waiting") for n in view.nodes):
        return view
    nodes = tuple(n if n.node_id in node_ids else dataclasses.replace(n, status="down")
                  for n in view.nodes)
    return dataclasses.replace(view, nodes=nodes)
