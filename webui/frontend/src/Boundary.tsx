// An error boundary: one panel that fails to render shows why, with a
// retry, instead of blanking the page.
import { Component } from "react";
import type { ReactNode } from "react";

export class Boundary extends Component<{ name: string; children: ReactNode }, { error: Error | null }> {
  state = { error: null as Error | null };
  static getDerivedStateFromError(error: Error) {
    return { error };
  }
  render() {
    if (this.state.error) {
      return (
        <div className="error" role="alert">
          The {this.props.name} failed to render: {this.state.error.message}{" "}
          <button onClick={() => this.setState({ error: null })}>retry</button>
        </div>
      );
    }
    return this.props.children;
  }
}
