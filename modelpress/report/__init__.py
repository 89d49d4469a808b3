"""modelpress.report"""
