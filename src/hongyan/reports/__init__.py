"""Read-side views of the platform's data: send records, timelines, replies, and later funnels."""
