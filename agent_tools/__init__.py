"""agent-tools: an MCP server whose tools map onto durable promises.

``build_server`` makes the MCP server (tools, one typed tool per job kind, the Tasks
extension); ``JobService`` is what agents see of jobs; ``WebPages`` serves approvals
and the dashboard; ``main`` is the ``agent-tools`` command.
"""

from agent_tools.cli import load_kinds, main
from agent_tools.config import DB_ENV, default_db_url, resolve_db_url
from agent_tools.jobs import JobError, JobService
from agent_tools.links import Signer
from agent_tools.server import build_server, worker_running
from agent_tools.tasks_ext import TASKS_EXTENSION, DurableTasks
from agent_tools.web import WebPages

__all__ = [
    "DB_ENV",
    "TASKS_EXTENSION",
    "DurableTasks",
    "JobError",
    "JobService",
    "Signer",
    "WebPages",
    "build_server",
    "default_db_url",
    "load_kinds",
    "main",
    "resolve_db_url",
    "worker_running",
]
