"""The hooks of zoo-hierarchical-ensemble; the ensembler lives beside this module."""

from zoo_core import hookimpl, lazy


@hookimpl
def zoo_ensemblers():
    return {"hierarchical": lazy("zoo_hierarchical_ensemble.ensembler:HierarchicalEnsembler")}
