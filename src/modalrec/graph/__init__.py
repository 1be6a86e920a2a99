"""Graph construction and sparse kernels, one module per concern.

* :mod:`~modalrec.graph.adjacency`: the normalised user-item adjacency and its fixed sparsity pattern;
* :mod:`~modalrec.graph.propagation`: sparse-dense products and LightGCN's layer mean;
* :mod:`~modalrec.graph.batch_rows`: the layer mean restricted to one training batch's rows;
* :mod:`~modalrec.graph.edge_pattern`: products over a fixed pattern with learned edge values (SpMM/SDDMM);
* :mod:`~modalrec.graph.knn`: chunked top-k item similarity graphs;
* :mod:`~modalrec.graph.dropout`: dropout on stored sparse entries;
* :mod:`modalrec.dispatch` (re-exported here): the choice between fast CPU kernels and their reference.

Every public name is re-exported here, so ``from modalrec.graph import sparse_mm`` works for all of them.
"""

from __future__ import annotations

from modalrec.dispatch import REFERENCE_ENV, reference_kernels, use_fast_path
from modalrec.graph.adjacency import (
    BipartitePattern,
    bipartite_adjacency,
    inv_sqrt_degree,
    mean_interactions,
    normalized_adjacency,
    normalized_interactions,
    scipy_to_torch,
    sym_normalize,
    to_csr,
)
from modalrec.graph.batch_rows import BatchRows, batch_local_indices, csr_rows, layer_mean_batch_rows
from modalrec.graph.dropout import sparse_dropout
from modalrec.graph.edge_pattern import EdgePattern
from modalrec.graph.knn import knn_edges, knn_graph, normalize_edges, sparse_cosine_knn_edges
from modalrec.graph.propagation import (
    EDGE_BLOCK,
    bipartite_hop,
    bipartite_layer_mean,
    fixed_spmm,
    layer_mean_reference,
    lightgcn_readout,
    propagate,
    sparse_mm,
    spmm_edges,
    spmm_into,
)

# The memory budget lives in modalrec.runtime; these names stay importable from here.
from modalrec.runtime import MEMORY_ENV, fit_chunk, memory_budget

__all__ = [
    "EDGE_BLOCK",
    "MEMORY_ENV",
    "REFERENCE_ENV",
    "BatchRows",
    "BipartitePattern",
    "EdgePattern",
    "batch_local_indices",
    "bipartite_adjacency",
    "bipartite_hop",
    "bipartite_layer_mean",
    "csr_rows",
    "fit_chunk",
    "fixed_spmm",
    "inv_sqrt_degree",
    "knn_edges",
    "knn_graph",
    "layer_mean_batch_rows",
    "layer_mean_reference",
    "lightgcn_readout",
    "mean_interactions",
    "memory_budget",
    "normalize_edges",
    "normalized_adjacency",
    "normalized_interactions",
    "propagate",
    "reference_kernels",
    "scipy_to_torch",
    "sparse_cosine_knn_edges",
    "sparse_dropout",
    "sparse_mm",
    "spmm_edges",
    "spmm_into",
    "sym_normalize",
    "to_csr",
    "use_fast_path",
]
