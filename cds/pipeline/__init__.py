"""cds/pipeline"""
