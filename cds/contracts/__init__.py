"""cds/contracts"""
