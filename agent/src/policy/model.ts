// Policy files as written (after schema validation), and the compiled form the evaluator uses.

export type Matcher =
  | string
  | { equals: string }
  | { in: string[] }
  | { notIn: string[] }
  | { exists: boolean }
  | { doesNotExist: true }
  | { prefix: string }
  | { glob: string };

export type Selector = Record<string, Matcher>;
export type Action = 'allow' | 'deny';
export type Mode = 'enforce' | 'observe';
export type Direction = 'ingress' | 'egress';

export interface RuleDocument {
  name?: string;
  action: Action;
  mode?: Mode;
  from?: Selector;
  to?: Selector;
  fromNetworks?: string[];
  toNetworks?: string[];
  ports?: number[];
}

export interface PolicyRecord {
  name: string;
  description?: string;
  order?: number;
  mode?: Mode;
  selector: Selector;
  ingress?: RuleDocument[];
  egress?: RuleDocument[];
}

export interface PolicyTest {
  name: string;
  from: Record<string, string>;
  fromAddress?: string;
  to: Record<string, string>;
  toAddress?: string;
  port: number;
  expect: Action;
}

export interface PolicyDocument {
  policies?: PolicyRecord[];
  tests?: PolicyTest[];
}

export type Attributes = Readonly<Record<string, string>>;
