"""The hierarchical ensemble of the VSPW 5th place (report section 2.3, Table 3): the ``hierarchical`` ensembler."""
