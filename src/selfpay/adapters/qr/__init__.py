"""QR code images, the batch sheet, and the batch zip / payment-card PDF."""
