"""What every page shares: templates, rendering, CSRF, redirects, error pages. The pages
themselves live with their domain (`<domain>/pages.py`), over the same services as REST."""
