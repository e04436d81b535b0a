from standins.server import serve
from standins.stripe.app import build_app

if __name__ == "__main__":
    serve(build_app, description="Stripe API stand-in", default_port=8102)
