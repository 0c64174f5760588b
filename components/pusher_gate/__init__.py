from components.pusher_gate.component import PusherGate
from components.pusher_gate.served_model import LatestPushedModelStrategy, served_model_resolver

__all__ = ["LatestPushedModelStrategy", "PusherGate", "served_model_resolver"]
