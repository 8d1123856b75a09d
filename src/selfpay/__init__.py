"""selfpay: self-service bill payment with a unique QR code per account."""

__version__ = "0.1.0"
