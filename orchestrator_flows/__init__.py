"""Orchestrator Flows: drives a customer-service call through five stages, calling one A2A agent
per intent, with an atomic audit trail in Redis.

core/ decides (pure: flows, routing, transitions, masking, errors, models); service/ runs a turn;
web/ is the HTTP edge; infra/ talks to Redis and the agents and reads the settings; ops/ is
metrics, logs and tracing; demo/ holds the demo agents and the scripted call.
"""
