"""Template filters for numbers on the staff pages."""

from django import template

register = template.Library()


@register.filter
def minus(value) -> str:
    """A formatted number with a true minus sign (U+2212) instead of a hyphen, as the κ axis writes it:
    ``{{ x|floatformat:2|minus }}`` → "−0.50"."""
    text = str(value)
    return "\u2212" + text[1:] if text.startswith("-") else text
