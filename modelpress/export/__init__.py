"""modelpress.export"""
